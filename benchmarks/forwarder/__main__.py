from benchmarks.forwarder.server import main

main()
