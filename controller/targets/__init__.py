"""Side-effect targets, one module each, behind the observe / apply / delete interface of controller.sync.apply."""
