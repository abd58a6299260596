"""Analytics: counts, rates, errors, segments and cost over a period, by category and day."""
