"""HTML reports: the static gallery writer and the demo page of every technique."""

from .demo import SECTIONS, DemoContext, run_demo
from .gallery import Figure, Section, referenced_images, staged_folder, write_gallery

__all__ = ["Figure", "Section", "write_gallery", "staged_folder", "referenced_images", "run_demo", "DemoContext",
           "SECTIONS"]
