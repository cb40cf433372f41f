"""Dataset loaders: WikiSQL format, Spider/BIRD format and the embedded demo."""
