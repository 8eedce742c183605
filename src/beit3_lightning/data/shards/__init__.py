"""Streaming shards for large datasets: WebDataset tars + a manifest (``format``), the converter behind
``beit3 prepare shards`` (``convert``) and the rank/worker-aware resumable reader (``stream``)."""
