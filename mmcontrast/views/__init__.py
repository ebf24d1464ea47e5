"""Views: how positives are made from raw examples (augmented views of one image for SimCLR)."""

from mmcontrast.views.simclr import ViewsDataset, blur_kernel_size, simclr_transform, view_seed

__all__ = ["ViewsDataset", "blur_kernel_size", "simclr_transform", "view_seed"]
