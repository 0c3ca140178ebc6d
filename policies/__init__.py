"""CrossGuard policy pack run by CI on every stack."""
