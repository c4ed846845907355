from .bench_layers import main

raise SystemExit(main())
