"""optimizers methods; see README.md in this folder."""
