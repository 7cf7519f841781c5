"""Structural knowledge distillation for torchvision Faster R-CNN detectors.

Follows "Structural Knowledge Distillation for Object Detection" (de Rijk et al.,
NeurIPS 2022): the student imitates the teacher's FPN features with an SSIM loss
(``--kd ssim``) instead of L1/L2 (``--kd l1`` / ``--kd mse``). Entry points:

- ``python -m examples.detection_distill.train``: train / distil / evaluate one student;
- ``python -m examples.detection_distill.make_synthetic``: a synthetic COCO-format data set;
- ``python -m examples.detection_distill.compare``: no-KD vs MSE vs SSIM on one schedule;
- ``python -m examples.detection_distill.demo``: the main job: a teacher, and students trained without and with
  SSIM distillation from it, on synthetic data in about 4 minutes on an idle 2-core CPU.
"""
