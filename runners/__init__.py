"""Runner profiles: turning a runner name and its flags into Beam pipeline options."""
