"""Job state and the durable queue (:mod:`store`), and the worker loop (:mod:`worker`)."""
