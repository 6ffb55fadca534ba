"""The plan layer (pure): the vocabulary of kernel objects, files and daemons, and the text the real tools take."""
