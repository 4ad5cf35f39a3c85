from adaptbench.cli import main

raise SystemExit(main())
