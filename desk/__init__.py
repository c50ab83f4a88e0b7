"""The desk's own logic that the actors run, pure and driven by `now`: L2 books and book families,
the portfolio, the hedge decision, the hedge controller and the hedge order's life, the minute's surface
snapshot. Imports no actor."""
