"""Conversion core: no gRPC, no storage client; local directories in, local directories out."""
