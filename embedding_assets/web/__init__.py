"""The browser and HTTP face of `emb serve`: the search API (`api`), the pages beside it
(`pages`: /label, /map, /search/page, their endpoints and the write token), what the pages
read from and write to the catalog (`catalog_reads`) and thumbnails by image id
(`thumbnails`)."""
