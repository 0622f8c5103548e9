"""The object-detection plugin (issue #10), in progress: not registered yet.

What exists so far is library code with its tests — datasets (COCO JSON, Pascal VOC, CSV)
with validation, a synthetic scene generator with box-aware augmentation, and COCO-protocol
evaluation through pycocotools. The task, the detectors (torchvision Faster R-CNN /
RetinaNet / FCOS / SSDlite on the engine's backbones), the plugin hooks and the shipped
pipeline come next; until then nothing here is reachable from a pipeline.
"""
