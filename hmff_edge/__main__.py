from hmff_edge.cli import main

main()
