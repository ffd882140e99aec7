"""The command line of every app: parsing, each verb calling one function of a lower layer.

commands: the app's group and the verbs that run days; reading and inspect:
the verbs that read a run; options: the options they share.
"""
