"""shiftlab's launchers for Hydra: the SLURM array launcher of ``launcher=slurm``, and stand-ins
for the launcher presets whose plugin is not installed.

The SLURM launcher (``shiftlab.runs.slurm_launcher``) extends hydra-submitit-launcher, which
comes with the slurm extra; without it there is none. The presets select their plugin's config
(``override /hydra/launcher: submitit_slurm``); for a plugin that is not installed an empty
config of that name is registered here, so that the presets compose, a single run can carry them,
and a multirun stops naming the extra to install (``shiftlab.extras``).
"""

from shiftlab.extras import LAUNCHERS, installed, stand_in_for_missing_launchers

stand_in_for_missing_launchers()

if installed(LAUNCHERS["slurm"].package):
    from shiftlab.runs import slurm_launcher

    class SlurmLauncher(slurm_launcher.SlurmLauncher):
        """``shiftlab.runs.slurm_launcher.SlurmLauncher`` where Hydra finds launchers
        (shiftlab/conf/launcher/slurm.yaml names it)."""
