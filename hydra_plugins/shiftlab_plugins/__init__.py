"""shiftlab's Hydra plugins: the resumable sweeper that every multirun uses (``resumable_sweeper``)
and the SLURM array launcher of ``launcher=slurm`` (``launchers``).

Hydra finds plugins by importing every module under the ``hydra_plugins`` namespace package (which
has no ``__init__.py``, so that several distributions share it) when an application starts; they
are shipped with shiftlab (pyproject.toml, ``packages.find``). See Hydra's "Plugin development"
page: https://hydra.cc/docs/advanced/plugins/develop.
"""
