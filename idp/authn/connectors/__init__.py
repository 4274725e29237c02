"""Identity sources behind one small protocol: the built-in directory (``local``) and LDAP directories
(``ldap``; Active Directory will be a preset of it), registered by type name, configured from the IDP_CONFIG
YAML file and the database, and tried in order (or picked by the username's domain) by the chain.

Modules: ``base`` (the protocol and its verdict), ``settings`` (validated configuration), ``registry`` (type
name -> factory), ``local``, ``ldap`` (the directory client) and ``ldap_connector`` (sign-in through it),
``shadow`` (users table rows for directory users), ``secrets`` (bind passwords), ``chain``, ``admin`` (the
services behind ``idp directory``) and ``cli``.
"""
