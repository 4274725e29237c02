"""The stable AWS console link /portal/aws/<account-id>/<permission-set-name>."""
