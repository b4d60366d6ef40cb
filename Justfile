# zimg recipes. `just` alone runs the tests and the linters, as CI does.

# The tests and the linters, as CI runs them (`just` alone).
default: test lint

# Run the whole test suite (unit, integration, multiprocess, CLI).
test *ARGS:
    python -m pytest {{ARGS}}

# Lint and type-check: ruff (rules and format) and mypy --strict on zimg/.
lint:
    ruff check .
    ruff format --check .
    mypy

# Format the code in place.
fmt:
    ruff format .
    ruff check --fix .

# The notebook's demo: 32 images on an embedded cluster of 2 workers.
demo:
    zimg demo

# A broker on the default endpoint (tcp://127.0.0.1:5555).
broker:
    zimg broker

# A worker node named NAME, connected to the default broker.
worker NAME:
    zimg worker --name {{NAME}}

# The live page of the default broker, and its HTTP front door, at http://127.0.0.1:8080/.
dashboard:
    zimg dashboard

# Send files to the default broker's workers; outputs go to ./out.
send +FILES:
    zimg send {{FILES}}

# Benchmark against Pool, Ray and Dask (python -m zimg.bench; --quick for a reduced run).
bench *ARGS:
    python -m zimg.bench {{ARGS}}

# One broker against 10 to 10,000 simulated nodes: CPU, memory, mass kill (python -m zimg.bench.scale; --quick for a reduced run).
scale *ARGS:
    python -m zimg.bench.scale {{ARGS}}

# One sender and one broker feeding instant simulated workers: images/s, CPU per image and per job (python -m zimg.bench.throughput; --quick for a reduced run).
throughput *ARGS:
    python -m zimg.bench.throughput {{ARGS}}
