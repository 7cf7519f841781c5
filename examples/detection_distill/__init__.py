"""Structural knowledge distillation for torchvision Faster R-CNN detectors.

Follows "Structural Knowledge Distillation for Object Detection" (de Rijk et al.,
NeurIPS 2022): the student imitates the teacher's FPN features with an SSIM loss
(``--kd ssim``) instead of L1/L2 (``--kd l1`` / ``--kd mse``). Entry points:

- ``python -m examples.detection_distill.train``: train / distil / evaluate one student;
- ``python -m examples.detection_distill.make_synthetic``: a synthetic COCO-format data set;
- ``python -m examples.detection_distill.compare``: no-KD vs MSE vs SSIM on one schedule;
- ``python -m examples.detection_distill.demo``: the whole pipeline on CPU in a few minutes.
"""
