"""The image-captioning plugin: a pretrained image encoder and a pretrained BERT decoder."""
