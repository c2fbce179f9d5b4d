"""What the embedding space looks like: k-means clusters with k chosen (`clustering`), Isolation
Forest anomaly scores (`anomaly`), 2-D maps by PCA, UMAP and t-SNE (`projection`), their
pictures and the interactive HTML map (`maps`), new images placed on what was fitted before
(`placing`), the per-image results and the maps of an embedding set end to end (`per_image`,
`mapping`, reporting plain values and `common.markdown.Markdown`), the stored results (`store`)
and the map export for Embedding Atlas (`map_export`)."""
