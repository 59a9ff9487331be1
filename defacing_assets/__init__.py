"""defacing_assets: measure what defacing costs head-and-neck radiotherapy data."""

__version__ = "0.1.0"
