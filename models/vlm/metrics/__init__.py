"""Scores of generated answers: ``answers`` (VQA score, ANLS, accuracy, IoU, per task and
benchmark) and ``captions`` (BLEU, METEOR, ROUGE-L, CIDEr-D, SPICE by the official COCO caption
toolkit where Java runs)."""
