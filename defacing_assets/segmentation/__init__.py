"""3D U-Net segmentation of head-and-neck OARs: model, data and training."""
