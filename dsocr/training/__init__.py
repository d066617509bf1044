"""Training: synthetic documents, tokenizer training, the training loop behind `dsocr train`."""
