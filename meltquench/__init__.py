"""meltquench: ab initio melt-quench amorphization engine.

Build a crystal, fix one half, melt and quench the other half under NVT with DFT forces
(GPAW by default), and measure the amorphous/crystalline result.
"""
__version__ = "0.1.0"
