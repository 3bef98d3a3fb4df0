"""The fleet's identities and their books: names, the PKI, the device registry, devices,
principals, and the audit of all of it against least privilege."""
