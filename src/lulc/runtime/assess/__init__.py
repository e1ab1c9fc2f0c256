"""From a class map to a product users can report: accuracy and class areas estimated from an
independent reference sample, with confidence intervals (``lulc assess``), the sample design
that draws that reference (``lulc sample-design``), and the pixels worth labelling next
(``lulc suggest-samples``)."""
