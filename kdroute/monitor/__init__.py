"""The monitor: shadow evaluation of student answers against the teacher, agreement drift alarms
and the quality breaker. `stats` holds the pure statistics every reader (the gateway's detector,
`kdroute monitor status`, the dashboard) shares, so they all show the same numbers."""
