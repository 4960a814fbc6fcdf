from tutorforge.cli import main

main()
