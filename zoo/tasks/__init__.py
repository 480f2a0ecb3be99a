"""What a run trains on: classification, language modelling, image generation."""
