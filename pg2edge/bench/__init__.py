"""`pg2edge bench`: accuracy parity and speed, with the machine they were measured on."""
