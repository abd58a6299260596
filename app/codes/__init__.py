"""One-time codes: 2FA and phone verification, resistant to brute force and SMS pumping."""
