"""Package data, read by the modules that use it (``importlib.resources``): the split index lists
(``split_indices.json``, metadata about ESConv, not ESConv text; read by ``splits``), the strategy taxonomies
(``taxonomies/``, read by ``taxonomy``) and the viewer's script (``view/``, read by ``view``)."""
