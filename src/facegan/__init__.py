"""facegan: train DCGAN-family face generators, watch them learn, measure and use them.

Python API::

    import facegan
    G = facegan.load_generator("runs/demo")       # run folder or checkpoint file
    faces = G.sample(16, seed=0)                  # uint8 (16, H, W, C)
    SR = facegan.load_upscaler("runs/sr")          # a `facegan train-sr` run
    big = SR.upscale(faces)                       # uint8 (16, H·scale, W·scale, C)
"""

from facegan.saved import load_generator, load_upscaler

__version__ = "0.1.0"
__all__ = ["load_generator", "load_upscaler", "__version__"]
