"""zimg: distributed image processing (and any numpy work) over ZeroMQ, with Erlang-style actors."""
