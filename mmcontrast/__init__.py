"""mmcontrast: contrastive representation learning for text, images, audio and video on Hugging Face."""

__version__ = "0.1.0"
