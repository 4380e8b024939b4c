"""facegan: train DCGAN-family face generators, watch them learn, measure and use them.

Python API::

    import facegan
    G = facegan.load_generator("runs/demo")       # run folder or checkpoint file
    faces = G.sample(16, seed=0)                  # uint8 (16, H, W, C)
"""

from facegan.sample import load_generator

__version__ = "0.1.0"
__all__ = ["load_generator", "__version__"]
