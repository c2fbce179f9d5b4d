"""`emb`, the command line: the app and its commands (`app`; labels and the label queue in
`labels`, search in `search`, read-only SQL in `sql`), the in-process run of every asset
(`runner`) with its closing summary (`summary`), runs left behind by a killed `emb`
(`orphan_runs`) and the demo images (`demo`). Light at import: Dagster and the libraries of
the assets load only inside the commands that need them."""
