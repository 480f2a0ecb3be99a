"""Where image data sets come from: numpy arrays, IDX files, the Hugging Face hub; each turned
into the fixed schema (image: Array3D uint8 HWC, label: ClassLabel)."""
