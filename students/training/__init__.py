"""Training floor: objectives, knowledge sources, the two-stage trainer and the teacher's fine-tuning."""
