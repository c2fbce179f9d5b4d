"""The catalog: which image files exist and what each is. Scanning a folder or an
object-storage prefix (`files`, `object_store`), describing each file once (`probe`: hash,
pixels, status, and the quality measures of the decoded pixels, `quality`), keeping the DuckDB
`images` table in line incrementally (`scan`), hash shards for partitions (`shards`), labels
from folders, CSV files and people (`labels`), and reading usable images back (`images`).
Knows nothing of embeddings, models or Dagster."""
