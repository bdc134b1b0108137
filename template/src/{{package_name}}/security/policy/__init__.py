"""Cedar policies: who may do what, with which arguments (policies/*.cedar; README "Policies").

Only `base` and `loading` are imported without a policy file, so Cedar is loaded only when policies are on.
"""
