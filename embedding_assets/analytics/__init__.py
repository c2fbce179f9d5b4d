"""What the embedding space looks like: k-means clusters with k chosen (`clustering`), Isolation
Forest anomaly scores (`anomaly`), 2-D maps by PCA, UMAP and t-SNE (`projection`), their
pictures and the interactive HTML map (`maps`), and reads of the stored results (`store`)."""
