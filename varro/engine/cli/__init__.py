"""The command line of every app: parsing, each verb calling one function of a lower layer."""
