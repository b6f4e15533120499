"""The internal payments API: point-of-sale systems create payments and refunds here (token protected)."""
