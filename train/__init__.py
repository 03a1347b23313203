"""Training-side code: data sets, audit, leak-free splits, augmentation, models, distillation."""
