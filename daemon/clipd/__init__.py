"""clipd: a daemon that indexes image folders with OpenCLIP and serves searches over gRPC."""
