from reasonlab.cli import main

raise SystemExit(main())
