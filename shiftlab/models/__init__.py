"""The networks (one file each: ``smallcnn``, ``mrnet2d``, ``densenet``, ``nodulex``), the helpers
they share (``first_conv``, ``memory_format``), and ``classifier``: the LightningModule that
trains any of them and records its logits."""
