"""nabaa's training wing: data reading and validation, the accelerate loop, metrics and reports."""
